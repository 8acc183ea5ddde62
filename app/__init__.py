"""The workbench app (Streamlit): app/main.py routes to the pages in app/views/."""
