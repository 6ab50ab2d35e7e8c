def greet(name: str) -> str:
    return f"Hello from a local module, {name}!"
