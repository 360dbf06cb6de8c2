"""groupbench: a benchmark harness for group recommender systems.

Data flows one way: conf -> dataset -> groups -> split -> model -> predictions -> metrics
-> tracker -> report. Each arrow is one module of this package.
"""

__version__ = "0.1.0"
