"""vitaccel.sim"""
