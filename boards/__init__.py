"""vitaccel.boards"""
