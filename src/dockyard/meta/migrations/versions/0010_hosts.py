"""Hosts running dockyard agent, the images they hold, and their work queue (issue 12)

Revision ID: 0010
Revises: 0009
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('hosts',
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('address', sa.String(length=255), nullable=True),
    sa.Column('version', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('last_seen', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('host_images',
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('digest', sa.String(length=150), nullable=False),
    sa.Column('repository', sa.String(length=255), nullable=False),
    sa.Column('tag', sa.String(length=128), nullable=True),
    sa.Column('managed', sa.Integer(), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('pulled_at', sa.Float(), nullable=True),
    sa.Column('last_used', sa.Float(), nullable=True),
    sa.Column('containers', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['host'], ['hosts.name'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('host', 'digest')
    )
    op.create_index('ix_host_images_repo_digest', 'host_images', ['repository', 'digest'], unique=False)
    op.create_table('host_work',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('repository', sa.String(length=255), nullable=False),
    sa.Column('reference', sa.String(length=150), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.Column('actor', sa.String(length=255), nullable=True),
    sa.ForeignKeyConstraint(['host'], ['hosts.name'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_host_work_host_state', 'host_work', ['host', 'state', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_host_work_host_state', table_name='host_work')
    op.drop_table('host_work')
    op.drop_index('ix_host_images_repo_digest', table_name='host_images')
    op.drop_table('host_images')
    op.drop_table('hosts')
