"""The benchmarks behind `lewm-ros bench`: measurements of the library (timings, FLOPs, a reference to compare
with), kept out of the packages they measure."""
