"""DermoHelper: skin-lesion triage (Low / Medium / High malignancy risk). A triage aid, not a diagnosis."""
__version__ = "0.1.0"
