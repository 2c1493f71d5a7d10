"""DICOMweb (PS3.18) at ``/dicomweb``: QIDO-RS search, WADO-RS retrieve, STOW-RS store.

Thin routers (``qido``, ``wado``, ``stow``) over domain modules: ``search`` (database, scope),
``retrieve`` (negotiation and streaming), ``storing`` (registration), ``multipart``.
``fast_routes`` answer the hottest GETs in front of FastAPI's routing (see ``fast``).
"""

from fastapi import APIRouter

from imaging_hub.worklist.dicomweb import qido, stow, wado

router = APIRouter()
router.include_router(qido.router)
router.include_router(wado.router)
router.include_router(stow.router)

fast_routes = [*wado.fast_routes]

__all__ = ["fast_routes", "router"]
