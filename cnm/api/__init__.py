"""The REST API served by cnmd, and its OpenAPI document."""
