"""Relais: COVID-19 test results from pharmacies to the national system and to patients."""
