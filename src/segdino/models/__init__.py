"""The model: preprocessing, the decoder head, and `SegDINO` (backbone + head), with its Hub
mixin."""
