"""events outbox, notification endpoints, storage quotas

Revision ID: 0009
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('event_outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('txid', sa.BigInteger(), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('repository', sa.String(length=255), nullable=True),
    sa.Column('actor', sa.String(length=255), nullable=True),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_event_outbox_order', 'event_outbox', ['txid', 'id'])
    op.create_table('event_endpoints',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('last_txid', sa.BigInteger(), nullable=False),
    sa.Column('last_id', sa.BigInteger(), nullable=False),
    sa.Column('delivered', sa.BigInteger(), nullable=False),
    sa.Column('dropped', sa.BigInteger(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.Float(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('last_delivered_at', sa.Float(), nullable=True),
    sa.Column('lease_owner', sa.String(length=128), nullable=True),
    sa.Column('lease_until', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('quotas',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('repositories', sa.String(length=255), nullable=False),
    sa.Column('hard', sa.BigInteger(), nullable=False),
    sa.Column('soft', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.Column('updated_by', sa.String(length=255), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('quota_usage',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('repositories', sa.String(length=255), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )


def downgrade() -> None:
    op.drop_table('quota_usage')
    op.drop_table('quotas')
    op.drop_table('event_endpoints')
    op.drop_index('ix_event_outbox_order', table_name='event_outbox')
    op.drop_table('event_outbox')
