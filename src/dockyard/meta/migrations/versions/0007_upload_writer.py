"""Upload sessions have at most one writer: a claim (token + lease) on the session row

A request that writes to a session (PATCH, PUT, cancel) claims it first; a second request
on the same session while the claim is live is refused and changes nothing. The lease
lets a session whose writer died (a killed process) be taken over.

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('uploads') as batch_op:
        batch_op.add_column(sa.Column('writer', sa.String(32), nullable=True))
        batch_op.add_column(sa.Column('writer_until', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('uploads') as batch_op:
        batch_op.drop_column('writer_until')
        batch_op.drop_column('writer')
