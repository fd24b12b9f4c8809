"""loragraph.api: the Litestar HTTP API, its SQLite run/feedback store and the playground.

``create_app(routers, settings)`` builds the app; ``loragraph serve PIPELINE.yaml`` runs it.
"""

from loragraph.api.app import ApiService, create_app
from loragraph.api.runner import RouterLike
from loragraph.api.settings import ApiSettings
from loragraph.api.store import ExportSummary, FeedbackItem, Store, export_feedback

__all__ = [
    "ApiService",
    "ApiSettings",
    "ExportSummary",
    "FeedbackItem",
    "RouterLike",
    "Store",
    "create_app",
    "export_feedback",
]
