from tortoise import migrations
from tortoise.migrations import operations as ops

# A member's monthly budget becomes their spend limit on the organization's pool (scope MEMBER, kind CAP,
# window MONTH in UTC, action BLOCK), and a month's budget usage the limit's counter of that month (period:
# Unix seconds of the month's start, UTC). A budget of an organization without a pool limited nothing (only
# pool spends were checked) and has no account to belong to: it is not carried over. Usage of members without
# a budget needs no counter (what a member spent this month is read from the usage rollups).
#
# Plain SQL that SQLite and PostgreSQL both run: the month's start is computed from 'YYYY-MM' with integer
# arithmetic (days from the civil date), since the two have no common date function. No AlterField: on SQLite
# it would make tables anew without their indexes.
BUDGETS_TO_LIMITS = [
    'INSERT INTO spend_limits (account_id, scope, subject, user_id, kind, "window", window_length, time_zone,'
    ' amount, action, paused, created_at, updated_at)'
    " SELECT a.id, 'MEMBER', 'member:' || CAST(b.user_id AS TEXT), b.user_id, 'CAP', 'MONTH', 1, 'UTC',"
    " b.monthly_limit, 'BLOCK', FALSE, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP"
    ' FROM member_budgets b JOIN credit_accounts a ON a.organization_id = b.organization_id WHERE TRUE'
    ' ON CONFLICT (account_id, subject, kind, "window", window_length, action) DO NOTHING',
    'INSERT INTO spend_limit_usage (limit_id, run_id, period, spent)'
    " SELECT l.id, '', 86400 * CAST((u.y / 400) * 146097 + (u.y % 400) * 365 + (u.y % 400) / 4"
    ' - (u.y % 400) / 100 + (153 * u.mp + 2) / 5 - 719468 AS BIGINT), u.spent'
    ' FROM (SELECT organization_id, user_id, spent,'
    ' CAST(SUBSTR(month, 1, 4) AS INTEGER) - CASE WHEN CAST(SUBSTR(month, 6, 2) AS INTEGER) <= 2 THEN 1 ELSE 0 END'
    ' AS y, (CAST(SUBSTR(month, 6, 2) AS INTEGER) + 9) % 12 AS mp FROM budget_usage) u'
    ' JOIN credit_accounts a ON a.organization_id = u.organization_id'
    " JOIN spend_limits l ON l.account_id = a.id AND l.subject = 'member:' || CAST(u.user_id AS TEXT)"
    " AND l.kind = 'CAP' AND l.\"window\" = 'MONTH' AND l.window_length = 1"
    " AND l.action = 'BLOCK' WHERE TRUE"
    ' ON CONFLICT (limit_id, run_id, period) DO NOTHING',
    'UPDATE credit_accounts SET spend_limits ='
    ' (SELECT COUNT(*) FROM spend_limits l WHERE l.account_id = credit_accounts.id)',
]


class Migration(migrations.Migration):
    dependencies = [('models', '0013_spend_limits')]

    initial = False

    operations = [
        ops.RunSQL(BUDGETS_TO_LIMITS),
        ops.DeleteModel(name='BudgetUsage'),
        ops.DeleteModel(name='MemberBudget'),
    ]
