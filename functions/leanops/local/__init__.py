"""The local runtime: DynamoDB Local harness, template reader and in-process dispatch (DESIGN §5)."""
