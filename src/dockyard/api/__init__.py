"""HTTP: distribution routes, admin routes, auth, error mapping. The only place with HTTP details."""
