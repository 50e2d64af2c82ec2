"""The local runtime: DynamoDB Local harness, template reader and in-process dispatch (design §5)."""
