"""cache_replicas: replicas with a blob cache register the address an admin call fans out to

Revision ID: 0011
Revises: 0010
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('cache_replicas',
                    sa.Column('address', sa.String(length=500), nullable=False),
                    sa.Column('seen_at', sa.Float(), nullable=False),
                    sa.Column('stats', sa.Text(), nullable=True),
                    sa.PrimaryKeyConstraint('address'))


def downgrade() -> None:
    op.drop_table('cache_replicas')
