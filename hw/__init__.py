"""vitaccel.hw"""
