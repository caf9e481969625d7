"""The Streamlit app over an outputs directory: `streamlit run app.py [-- --outputs DIR]`.

`main` sets the app up and picks the page; pages are scripts in `pages/` (Streamlit runs them,
AppTest can switch to them); what they read comes from `runs` (pure functions, no Streamlit),
what they share from `ui`.
"""
