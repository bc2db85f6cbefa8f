"""Built-in PETL methods, one per file. Every module here is imported when the method registry is first
used, so a new file with a `@register_method(...)` class is all it takes to add a method."""
