"""Built-in super-resolution methods: one folder each (``srkit/methods/<name>/``).

A folder's ``__init__`` holds the method's descriptor and the import path of its class (read when
methods are listed, so it imports no model code); ``method.py`` the inference, training losses and
private modules beside it. No method imports another: what two methods share is a hook
(:mod:`srkit.diffusion`), a backend or a pipeline (:mod:`srkit.pipelines`).
"""
