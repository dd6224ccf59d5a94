"""The findings stage: the paper's research questions answered for one study."""
