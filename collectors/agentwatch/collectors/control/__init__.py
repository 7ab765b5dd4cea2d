"""The control plane: kill switch, approvals and audit, shared by replicas through the store."""

__all__: list[str] = []
