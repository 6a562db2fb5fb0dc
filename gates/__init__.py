"""Built-in gates. Each module registers one gate through the ``gatekeeper.gates`` entry points."""
