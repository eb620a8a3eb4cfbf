"""Self-test of db_connections.py: the shipped numbers and a limit that is too low.
Run: python3 deploy/tools/db_connections_test.py (no dependencies)."""
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import db_connections as dc  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


class ConnectionArithmetic(unittest.TestCase):
    def shipped(self) -> dc.Demand:
        return dc.demand({"WAFLEET_DB_POOL_SIZE": "10", "WAFLEET_SENDER_DB_POOL_SIZE": "3"}, 12,
                         {"WAFLEET_ADMIN_DB_POOL_SIZE": "5"}, 2, dc.leader_duties(REPO))

    def test_the_formula_counts_pools_listen_lease_leaders_admin_and_cli(self):
        d = self.shipped()
        self.assertEqual(d.leaders, 3)
        self.assertEqual(d.worker, 12 * (10 + 3 + 1 + 1) + 2 * 3)
        self.assertEqual(d.admin, 2 * 5 + 2)

    def test_each_duty_role_covers_its_share_and_max_connections_covers_both(self):
        d = self.shipped()
        ok = {"wafleet_worker": {"connectionLimit": d.worker}, "wafleet_admin": {"connectionLimit": d.admin}}
        self.assertEqual(dc.problems(d, ok, 250), [])
        low = {"wafleet_worker": {"connectionLimit": d.worker - 1}, "wafleet_admin": {"connectionLimit": d.admin}}
        self.assertTrue(any("wafleet_worker connectionLimit" in p for p in dc.problems(d, low, 250)))
        found = dc.problems(d, ok, d.worker + d.admin + 10)
        self.assertTrue(any(p.startswith("max_connections") for p in found), found)

    def test_a_missing_duty_role_is_reported(self):
        found = dc.problems(self.shipped(), {"wafleet_app": {"connectionLimit": 500}}, 600)
        self.assertIn("no managed role wafleet_worker", found)
        self.assertIn("no managed role wafleet_admin", found)


if __name__ == "__main__":
    unittest.main()
