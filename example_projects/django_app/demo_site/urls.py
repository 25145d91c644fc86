from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path
from organizations import views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("reports/export/", views.export_report, name="export_report"),
    path("admin/", admin.site.urls),
]
