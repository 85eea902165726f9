"""Storage usage over time (the dashboard): usage_samples, and repository_usage to sort by

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'usage_samples',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('at', sa.Float(), nullable=False),
        sa.Column('blobs', sa.BigInteger(), nullable=False),
        sa.Column('bytes', sa.BigInteger(), nullable=False),
        sa.Column('logical_bytes', sa.BigInteger(), nullable=False),
        sa.Column('repositories', sa.Integer(), nullable=False),
        sa.Column('manifests', sa.BigInteger(), nullable=False),
    )
    op.create_index('ix_usage_samples_at', 'usage_samples', ['at'])
    op.create_table(
        'repository_usage',
        sa.Column('repository_id', sa.Integer(), sa.ForeignKey('repositories.id', ondelete='CASCADE'),
                  primary_key=True),
        sa.Column('bytes', sa.BigInteger(), nullable=False),
        sa.Column('images', sa.Integer(), nullable=False),
        sa.Column('tags', sa.Integer(), nullable=False),
        sa.Column('last_push', sa.Float(), nullable=True),
        sa.Column('last_pull', sa.Float(), nullable=True),
        sa.Column('sampled_at', sa.Float(), nullable=False),
    )
    op.create_index('ix_repository_usage_bytes', 'repository_usage', ['bytes'])
    op.create_index('ix_repository_usage_images', 'repository_usage', ['images'])
    op.create_index('ix_repository_usage_last_push', 'repository_usage', ['last_push'])


def downgrade() -> None:
    op.drop_table('repository_usage')
    op.drop_table('usage_samples')
