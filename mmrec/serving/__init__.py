"""Serving a trained model: the export bundle, the FAISS index, the recommender and its HTTP app."""
