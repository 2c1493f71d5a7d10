"""The hub service: FastAPI app, database, assignment, reports, auth, audit, DICOMweb."""
