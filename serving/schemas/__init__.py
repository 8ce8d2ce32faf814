"""What the API takes and answers (pydantic): one module per resource, shown by OpenAPI at
/docs. Routes answer through these models only, so nothing else leaves the service."""
