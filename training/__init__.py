"""Training-side code of mtgfe: data loaders, synthetic data, MVJRC views, metrics, trainer."""
