"""How the engine feeds `metrics`: settings from config, emission points, the metastore
collector and the health checks. `metrics` stays a leaf; this package is the bridge.
"""
