"""gateways"""
