"""Reranker Studio: fine-tune a cross-encoder reranker on your own labelled data.

All logic lives in this package; the Streamlit pages and the CLI are thin callers of it.
"""

__version__ = "0.1.0"
