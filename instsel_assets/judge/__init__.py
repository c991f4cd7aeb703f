"""The judge engine: every powerful-LLM method (family 3) is a prompt template with a parser over it.

``types`` holds the interface between the engine (``request``, ``cache``, ``backends``, ``engine``) and
the templates (``templates/<method>.py``).
"""
