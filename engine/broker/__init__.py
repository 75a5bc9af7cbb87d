"""The broker: where messages get their ids and history, and cross to every node's registry."""
