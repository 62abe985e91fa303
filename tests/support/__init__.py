"""What the tests share: servers they start (S3 on moto or Ceph RGW, PostgreSQL, `mediagate
serve` processes, an identity provider, an application's webhook and hook endpoint), the
tools to reach them (an API client, raw HTTP, a cuttable TCP proxy) and the test data.

Test modules import from here, never from each other or from conftest.py (which only
declares the fixtures).
"""
