"""Differentiable topology of feature clouds (Sec. 3.2): TPS sampling, Vietoris-Rips persistence with
critical-edge gradients, and the persistence-weighted Chamfer distance. Depends on torch, numpy, scipy and
gudhi only (giotto-ph when chosen), never on the rest of ptdistill."""
