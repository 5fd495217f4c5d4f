"""fedgate consent: signed merchant authorizations, their lifecycle, checks and cohort manifests."""

__all__: list[str] = []
