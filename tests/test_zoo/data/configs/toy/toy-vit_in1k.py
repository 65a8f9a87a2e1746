# Zoo fixture: the classifier of toy_base.py.
_base_ = ['./toy_base.py']
