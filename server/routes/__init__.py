"""The API's routers, one a resource: keys, datasets, jobs under API_PREFIX; health at
the root. Each router carries its full prefix, so a route's path is its whole template
(what the request metrics label it by)."""

API_PREFIX = "/api/v1"
