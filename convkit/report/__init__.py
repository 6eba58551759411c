"""``convkit report``: a suite's run folders → report.md, a self-contained report.html and figures in report/.

Reads only what the stages wrote (through convkit.artifacts) and the model definitions; imports no stage.
"""
