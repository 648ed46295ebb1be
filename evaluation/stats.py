"""The statistics of evaluation: one confidence interval for a rate measured on n images."""
import math

Z95 = 1.959963984540054


def binomial_ci95(rate, n):
    """Half-width of the normal-approximation 95% confidence interval of a rate measured on
    ``n`` images (the interval the tables print as +-)."""
    if n <= 0:
        return float("nan")
    return 1.96 * math.sqrt(max(rate * (1.0 - rate), 0.0) / n)
