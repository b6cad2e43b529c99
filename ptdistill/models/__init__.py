"""Segmentation models: plain `nn.Module`s that take a collated batch dict."""
