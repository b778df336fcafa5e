"""Layers the models are wired from: MLPs and interactions (`interaction`), behaviour
sequences (`sequence`) and multi-task experts and gates (`multitask`).

Layering: pure Flax modules; imports only the bottom layer.
"""
