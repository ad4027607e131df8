"""The paper's experiments: the reproduce pipeline and its report."""
