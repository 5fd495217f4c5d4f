"""fedgate federation: ERP data, models and the Flower apps that train and score on ISV nodes."""

__all__: list[str] = []
