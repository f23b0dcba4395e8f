"""How servers are obtained and started: settings, the embedded broker, ClickHouse clients, the CLI."""
