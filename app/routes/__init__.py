"""HTTP routes, one `APIRouter` per resource; `app.main.create_app` includes each.

- `faces.py`: `/v1/embed`, `/v1/verify`, `/v1/region-map` (API key when configured, model must be ready);
- `model_info.py`: `/v1/model`;
- `operations.py`: `/healthz`, `/readyz`, `/metrics` (never behind an API key).

Routes are module-level functions; what they need comes through `app.dependencies`. `openapi.py` documents
the bodies and errors, `convert.py` turns pipeline results into response models.
"""
