"""The browser page of ``vlmtune serve``: base and fine-tuned answers side by side (Gradio).

``pictures`` and ``streams`` are plain Python (tested without a browser); ``app`` builds and
launches the Gradio page from callables the serve stage composes, so this layer loads no model.
"""
