"""The paper's tables and figures from the output folders of a grid (``loreal results``)."""
