"""vitaccel.sw"""
