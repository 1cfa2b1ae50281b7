"""Language-model providers behind one interface (see `base.Provider`).

Importing this package is cheap (dataclasses and pydantic only): the HTTP and
boto3 code loads when a provider is first built, so the API's cold start does
not pay for it.
"""
