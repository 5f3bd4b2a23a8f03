"""Pure domain code: no chalice, boto3, pynamodb or encryption SDK imports (a test enforces it)."""
